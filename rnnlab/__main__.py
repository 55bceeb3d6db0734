from rnnlab.cli import entry

entry()
