from django.apps import AppConfig


class VitrineConfig(AppConfig):
    """Registers the project package itself, for its ``embedded`` management command."""

    name = "config"
    label = "vitrine"
    verbose_name = "Vitrine"
