from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("articles", "0001_initial")]
    operations = [
        migrations.AddField(model_name="article", name="summary", field=models.TextField(null=True)),
    ]
