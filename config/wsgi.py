import os

from django.core.wsgi import get_wsgi_application

from config.memory import malloc_arenas_limit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
malloc_arenas_limit()  # before any thread starts (the model preload, ONNX Runtime): see config/memory.py
application = get_wsgi_application()
