#!/usr/bin/env python
"""Django's command-line utility for this example: `python manage.py migrate`, `python manage.py photos ...`,
`python manage.py test`."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clipsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
