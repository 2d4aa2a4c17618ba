from services.sender.sender import main

main()
