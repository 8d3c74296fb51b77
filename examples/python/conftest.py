"""Shared by the tests: the photos to insert and a fresh database per test module on the server that libpq's
environment names (scripts/test.sh points PGHOST and PGPORT at the private 'test' cluster: tiny model, dimension 32)."""
from pathlib import Path

import psycopg
import pytest

IMAGES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "images"
PHOTOS = [IMAGES / name for name in ("moon_l_512x512.png", "chelsea_rgb_451x300.jpg",
                                     "rocket_rgb_progressive_640x427.jpg", "coffee_rgb_3x500.png",
                                     "astronaut_rgb_posterized_300x250.png", "camera_l_320x320.jpg")]


def fresh_database(name: str) -> str:
    """Drops and creates the database NAME; returns its conninfo."""
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"dbname={name}"


@pytest.fixture(scope="session")
def photos():
    return PHOTOS
