from bizon_fast.cli import main

main()
