"""The database itself keeps External IDs unique per template."""

import pytest
from django.db import IntegrityError, transaction

from members.models import Member

from .factories import make_member, mirror_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_templates(sandbox):
    return mirror_template(), mirror_template(sandbox.template_ids()[1])


def test_two_members_with_one_external_id_on_one_template_fail_at_the_database(two_templates):
    club, _ = two_templates
    make_member(club, external_id="laura@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        # .update() and bulk paths skip model validation: only the constraint can stop this.
        Member.objects.bulk_create([Member(template=club, external_id="laura@example.com", source="manual")])
    assert Member.objects.filter(external_id="laura@example.com").count() == 1


def test_the_same_external_id_on_two_templates_is_fine(two_templates):
    club, coffee = two_templates
    make_member(club, external_id="+3545551234")
    make_member(coffee, external_id="+3545551234")
    assert Member.objects.filter(external_id="+3545551234").count() == 2


def test_null_external_ids_never_collide(two_templates):
    club, _ = two_templates
    for _ in range(3):
        make_member(club, external_id=None)
    assert Member.objects.filter(template=club, external_id__isnull=True).count() == 3
