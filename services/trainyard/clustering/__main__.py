from trainyard.services import main

main("clustering")
