"""Running a trained model on images and videos: sources, overlays, prediction export."""
