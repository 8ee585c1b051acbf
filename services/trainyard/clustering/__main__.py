from trainyard.cli import serve_main

serve_main("clustering")
