"""The shipped multiple-choice tasks (JSONL files beside this module) and the script that makes them."""
