"""The shop's catalogue, so the ranking has something to rank."""

from django.db import migrations

PRODUCTS = [
    ("Espresso beans, 1 kg", 412),
    ("Pour-over kettle", 97),
    ("Burr grinder", 158),
    ("Paper filters, 100", 630),
    ("Ceramic dripper", 121),
    ("Milk jug", 74),
    ("Travel mug", 265),
    ("Decaf beans, 500 g", 88),
]


def seed(apps, schema_editor):
    Product = apps.get_model("shop", "Product")
    for name, sales in PRODUCTS:
        Product.objects.update_or_create(name=name, defaults={"sales": sales})


def unseed(apps, schema_editor):
    Product = apps.get_model("shop", "Product")
    Product.objects.filter(name__in=[name for name, _ in PRODUCTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
