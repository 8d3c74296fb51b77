"""python manage.py photos load PHOTO... | text QUERY [-k K] | like NAME [-k K]"""
from django.core.management.base import BaseCommand

from photos import search


class Command(BaseCommand):
    help = "Loads photos and embeds them in the database, or searches them by text or by the name of a photo."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("load").add_argument("photos", nargs="+")
        for name, what in (("text", "query"), ("like", "name")):
            command = commands.add_parser(name)
            command.add_argument(what)
            command.add_argument("-k", type=int, default=5)

    def handle(self, *args, command, **options):
        if command == "load":
            self.stdout.write(f"{search.add_photos(options['photos'])} photos inserted")
            search.embed_photos()
            return
        photos = (search.photos_for_text(options["query"], options["k"]) if command == "text"
                  else search.photos_like(options["name"], options["k"]))
        for photo in photos:
            self.stdout.write(f"{photo.distance:.4f}  {photo.name}")
