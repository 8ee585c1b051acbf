from trainyard.services import main

main("orchestrator")
