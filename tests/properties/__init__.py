"""One property suite over every entry point: whatever a user types, clicks or a platform hands over.

Each entry point gives a valid request or change, or one `BotError` sentence
(`sentences.assert_sentence`) with nothing stored; never another exception.
"""
