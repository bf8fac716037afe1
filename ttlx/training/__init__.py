"""The training loop and its parts: steps, epoch writer, prefetch, freezing, optimizer, schedule, losses."""
