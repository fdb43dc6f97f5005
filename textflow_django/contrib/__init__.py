"""Integrations with other packages, one subpackage each (``textflow_django.contrib.<package>``).

Each imports its package only inside itself: the rest of textflow-django never loads them, so
a project without django-allauth or django-two-factor-auth pays nothing for them.
"""
