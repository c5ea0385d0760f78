"""The way in: OpenAI routes, wire types, who is asking, and the serving logic of a cached request."""
