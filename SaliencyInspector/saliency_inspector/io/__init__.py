"""Reading and writing CT volumes and organ segmentations with their true geometry (uses nothing else of ours)."""
