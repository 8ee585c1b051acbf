from trainyard.services import main

main("finetuning")
