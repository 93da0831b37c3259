"""Text models: offline corpora, Hugging Face classifiers loaded safely, word- and character-level attacks."""
