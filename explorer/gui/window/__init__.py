"""The window: start-up, the main window, the job runner, dialogs, its screen."""
