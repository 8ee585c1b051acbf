from trainyard.services import main

main("jobrunner")
