from fmtrain.cli import main

main()
