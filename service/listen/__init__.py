"""Listen sessions: one supervised task per live call, recording its audio and events."""
