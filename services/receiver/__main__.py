from services.receiver import main

main()
