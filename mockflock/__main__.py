from mockflock.cli import main

main()
