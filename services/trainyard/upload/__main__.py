from trainyard.services import main

main("upload")
