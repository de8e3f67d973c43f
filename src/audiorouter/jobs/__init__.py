"""Use cases: the one place where a request's work is assembled, between the API handlers and the CLI above
and the router below. Nothing here knows HTTP: an api/ handler parses, calls a job, renders.

- jobs.transcription: audio of any length to a transcript (decode or spool, chunk plan, stitching, the
  transcript cache, streamed text): TranscriptionJob (prepare, run, close), transcribe() in one call
- jobs.speech: text of any length to one audio stream (text split, pieces joined, encoding): speak(), encoded()
- the other modules build on these (audio chat, batch work in the background)."""
