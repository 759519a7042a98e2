from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100, unique=True)
    sales = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.sales} sold)"
