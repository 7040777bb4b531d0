"""render-human: person videos (TikTok-style frame folders or video files) -> human stores."""
