"""Usage records keep their user, API key and token as plain columns instead of foreign keys.

Deleting a user, key or token while its connection is open made the record's writes fail (and a
user's delete cascaded to their history). The columns keep their names, types, data and indexes:
the foreign key constraints are dropped (``db_constraint=False``), the username and the key's public
id are copied into the existing rows (so that they still read well after the user or key is gone),
then the model state swaps the relations for plain fields over the same columns.
"""

from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

USER_INDEX = "usage_conne_user_id_eb335c_idx"


def copy_identities(apps, schema_editor):
    Record = apps.get_model("usage", "ConnectionRecord")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    ApiKey = apps.get_model("accounts", "ApiKey")
    username = User.objects.filter(pk=OuterRef("user_id")).values("username")[:1]
    Record.objects.update(username=Coalesce(Subquery(username), Value("")))
    key_id = ApiKey.objects.filter(pk=OuterRef("api_key_id")).values("key_id")[:1]
    Record.objects.filter(api_key_id__isnull=False).update(key_id=Coalesce(Subquery(key_id), Value("")))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("usage", "0003_user_summary"),
    ]

    operations = [
        migrations.AddField(
            model_name="connectionrecord",
            name="username",
            field=models.CharField(
                blank=True, default="", help_text="the username when the connection was made", max_length=150
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="connectionrecord",
            name="key_id",
            field=models.CharField(blank=True, default="", help_text="the API key's public id", max_length=32),
            preserve_default=False,
        ),
        # Drop the constraints; the columns and their indexes stay.
        migrations.AlterField(
            model_name="connectionrecord",
            name="user",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=models.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="connectionrecord",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=models.DO_NOTHING,
                related_name="+",
                to="accounts.apikey",
            ),
        ),
        migrations.AlterField(
            model_name="connectionrecord",
            name="token",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=models.DO_NOTHING,
                related_name="+",
                to="accounts.issuedtoken",
            ),
        ),
        # After the constraints are gone (PostgreSQL refuses to alter a table with pending trigger events).
        migrations.RunPython(copy_identities, migrations.RunPython.noop),
        # The same columns, now plain fields: nothing to do in the database.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="connectionrecord", name=USER_INDEX),
                migrations.RemoveField(model_name="connectionrecord", name="user"),
                migrations.RemoveField(model_name="connectionrecord", name="api_key"),
                migrations.RemoveField(model_name="connectionrecord", name="token"),
                migrations.AddField(
                    model_name="connectionrecord",
                    name="user_id",
                    field=models.IntegerField(db_index=True, help_text="the user's id; kept when the user is deleted"),
                    preserve_default=False,
                ),
                migrations.AddField(
                    model_name="connectionrecord",
                    name="api_key_id",
                    field=models.BigIntegerField(blank=True, db_index=True, help_text="the API key's id", null=True),
                ),
                migrations.AddField(
                    model_name="connectionrecord",
                    name="token_id",
                    field=models.CharField(
                        blank=True, db_index=True, help_text="the token's jti", max_length=32, null=True
                    ),
                ),
                migrations.AddIndex(
                    model_name="connectionrecord",
                    index=models.Index(fields=["user_id", "-started_at"], name=USER_INDEX),
                ),
            ],
        ),
        migrations.AlterModelOptions(
            name="connectionrecord",
            options={"ordering": ["-started_at"], "permissions": [("view_runners", "Can view the runners page")]},
        ),
    ]
