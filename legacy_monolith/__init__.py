"""The bundled legacy app, laid out like a Django project: settings, models, urls, views, manage."""
