"""Pages for people: server-rendered Jinja templates in English and Chinese (zh-CN)."""
