"""Staff pages for campaign CSV uploads: upload, confirm the column mapping, follow the batch, download."""

import os

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from members import selectors as member_selectors
from templates_sync.models import PassTemplate

from . import claims, passkit, selectors, services
from .forms import EncodingForm, MappingForm, UploadForm
from .models import LinkBatch
from .samples import link_sample_csv

VIEW = "links.view_linkbatch"
UPLOAD = "links.upload_links"
DOWNLOAD_LINKS = "links.download_links"
HISTORY_PAGE_SIZE = 50
# The newest records shown on the uploads page (deletions) and on a batch page (downloads and changes).
DELETIONS_SHOWN = 20
EVENTS_SHOWN = 50


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_list(request):
    page = Paginator(selectors.link_batch_list(), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    deletions = selectors.link_batch_deletions()[:DELETIONS_SHOWN]
    return render(request, "links/batch_list.html", {"page": page, "deletions": deletions})


@require_GET
@permission_required(VIEW, raise_exception=True)
def template_batches(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    page = Paginator(selectors.link_batch_list(template=template), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "links/template_batches.html", {"template": template, "page": page})


@require_http_methods(["GET", "POST"])
@permission_required(UPLOAD, raise_exception=True)
def upload(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    refusal = template.issue_refusal_reason
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and not refusal and form.is_valid():
        try:
            batch = services.link_batch_create(
                template=template,
                uploaded_by=request.user,
                file=form.cleaned_data["file"],
                delimiter=form.cleaned_data["delimiter"] or None,
                single_use=form.cleaned_data["single_use"],
                short_links=form.cleaned_data["short_links"],
                encoding=form.cleaned_data["encoding"] or None,
                output_format=LinkBatch.OutputFormat.PASSKIT
                if form.cleaned_data["passkit_format"]
                else LinkBatch.OutputFormat.PORTAL,
            )
        except services.LinkUploadError as exc:
            form.add_error("file", str(exc))
        else:
            return redirect("links:batch_detail", batch.pk)
    return render(request, "links/upload.html", {"template": template, "form": form, "refusal": refusal})


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_detail(request, batch_id):
    batch = get_object_or_404(LinkBatch.objects.select_related("template", "uploaded_by"), pk=batch_id)
    return _detail(request, batch, MappingForm(batch=batch) if batch.status == LinkBatch.Status.UPLOADED else None)


@require_POST
@permission_required(UPLOAD, raise_exception=True)
def batch_confirm(request, batch_id):
    batch = get_object_or_404(LinkBatch.objects.select_related("template"), pk=batch_id)
    form = MappingForm(request.POST, batch=batch)
    if batch.status == LinkBatch.Status.UPLOADED and form.is_valid():
        try:
            services.link_batch_confirm(
                batch=batch, mapping=form.cleaned_data["mapping"], strict=form.cleaned_data["strict"]
            )
        except services.LinkUploadError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("links:batch_detail", batch.pk)
    if batch.status != LinkBatch.Status.UPLOADED:
        return redirect("links:batch_detail", batch.pk)  # confirmed twice (a double click): show the batch
    return _detail(request, batch, form, status=400)


@require_POST
@permission_required(UPLOAD, raise_exception=True)
def batch_encoding(request, batch_id):
    """Read an upload waiting for its mapping in the encoding staff chose."""
    batch = get_object_or_404(LinkBatch.objects.select_related("template"), pk=batch_id)
    form = EncodingForm(request.POST)
    if form.is_valid():
        try:
            services.link_batch_reencode(batch=batch, encoding=form.cleaned_data["encoding"])
        except services.LinkUploadError as exc:
            messages.error(request, str(exc))
    return redirect("links:batch_detail", batch.pk)


def _detail(request, batch: LinkBatch, form: MappingForm | None, status: int = 200, remap: bool = False):
    preview = selectors.link_batch_preview(batch=batch) if form is not None else None
    mapping_rows = []
    mapping = batch.mapping
    if form is not None:
        # Each column beside its first few values: what a person looks at to tell an email from a name.
        samples = [cells for _, cells in preview.rows[:3]]
        mapping = form.current_mapping()
        mapping_rows = [
            (column, field, [row[index] for row in samples if index < len(row)], passkit.unused_reason(column))
            for index, (column, field) in enumerate(form.columns())
        ]
    targets = dict(selectors.mapping_targets(template=batch.template))
    autofill = member_selectors.autofill_setting_for(template=batch.template)
    context = {
        "batch": batch,
        "form": form,
        "preview": preview,
        "mapping_rows": mapping_rows,
        "mapping_labels": [(column, targets.get(target, target)) for column, target in batch.mapping.items()],
        "unused_columns": selectors.link_unused_columns(header=batch.header, mapping=mapping),
        "autofill": autofill if autofill.is_on else None,
        "encoding_form": EncodingForm(initial={"encoding": batch.encoding})
        if form is not None and not remap and batch.source_encoding != "utf-16"
        else None,
        "can_rerun": services.link_batch_can_rerun(batch=batch),
        "remap": remap,
        "mapping_action": reverse("links:batch_remap" if remap else "links:batch_confirm", args=[batch.pk]),
        "events": selectors.link_batch_events(batch_id=batch.pk)[:EVENTS_SHOWN],
    }
    return render(request, "links/batch_detail.html", context, status=status)


@require_http_methods(["GET", "POST"])
@permission_required(UPLOAD, raise_exception=True)
def batch_remap(request, batch_id):
    """Change the columns of a finished or failed batch and make its links again."""
    batch = get_object_or_404(LinkBatch.objects.select_related("template", "uploaded_by"), pk=batch_id)
    if not batch.is_finished:
        return redirect("links:batch_detail", batch.pk)
    form = MappingForm(request.POST or None, batch=batch)
    if request.method == "POST" and form.is_valid():
        try:
            services.link_batch_remap(
                batch=batch, mapping=form.cleaned_data["mapping"], strict=form.cleaned_data["strict"], user=request.user
            )
        except services.LinkUploadError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "The links are being made again with the new columns.")
            return redirect("links:batch_detail", batch.pk)
    return _detail(request, batch, form, status=400 if form.errors else 200, remap=True)


@require_http_methods(["GET", "POST"])
@permission_required(UPLOAD, raise_exception=True)
def batch_delete(request, batch_id):
    """A confirmation page, then the deletion of the upload and its files (recorded)."""
    batch = get_object_or_404(LinkBatch.objects.select_related("template", "uploaded_by"), pk=batch_id)
    error = ""
    if request.method == "POST":
        try:
            services.link_batch_delete(batch=batch, user=request.user)
        except services.LinkUploadError as exc:
            error = str(exc)
        else:
            messages.success(request, f"The upload “{batch.original_name}” and its files are deleted.")
            return redirect("links:batch_list")
    context = {"batch": batch, "error": error, "claims": claims.link_batch_claim_counts(batch=batch)}
    return render(request, "links/batch_delete.html", context, status=400 if error else 200)


@require_GET
@permission_required(VIEW, raise_exception=True)
def template_sample(request, template_id):
    """A sample CSV for a template: its input fields as columns, three made-up rows."""
    template = get_object_or_404(PassTemplate, pk=template_id)
    # With a BOM, so Excel opens the Icelandic letters as UTF-8.
    response = HttpResponse("\ufeff" + link_sample_csv(template=template), content_type="text/csv; charset=utf-8")
    name = slugify(template.name) or "template"
    response["Content-Disposition"] = f'attachment; filename="{name}-sample.csv"'
    return response


@require_POST
@permission_required(UPLOAD, raise_exception=True)
def batch_rerun(request, batch_id):
    batch = get_object_or_404(LinkBatch.objects.select_related("template"), pk=batch_id)
    try:
        services.link_batch_rerun(batch=batch)
    except services.LinkUploadError as exc:
        messages.error(request, str(exc))
    return redirect("links:batch_detail", batch.pk)


@require_POST
@permission_required(UPLOAD, raise_exception=True)
def batch_cancel(request, batch_id):
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    try:
        services.link_batch_cancel(batch=batch, user=request.user)
    except services.LinkUploadError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Cancelled. The links made until now are kept as a partial result.")
    return redirect("links:batch_detail", batch.pk)


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_status(request, batch_id):
    return JsonResponse(get_object_or_404(LinkBatch, pk=batch_id).as_json())


# kind in the URL → (file field, suffix of the downloaded name)
DOWNLOADS = {"output": ("output_file", "links"), "errors": ("errors_file", "errors"), "input": ("input_file", "")}


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_download(request, batch_id, kind):
    """Files are served through here, never from a media URL: the permission check is the point. The links
    file needs its own permission (a link is a bearer secret); every download is recorded."""
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    if kind not in DOWNLOADS:
        raise Http404
    if kind == "output" and not request.user.has_perm(DOWNLOAD_LINKS):
        raise PermissionDenied("Only a manager may download the links.")
    attribute, suffix = DOWNLOADS[kind]
    name = getattr(batch, attribute).name
    if not name or not default_storage.exists(name):
        raise Http404("This file is not ready.")
    services.link_batch_download_record(batch=batch, kind=kind, user=request.user)
    stem = os.path.splitext(batch.original_name)[0] or "upload"
    filename = f"{stem}-{suffix}.csv" if suffix else batch.original_name
    response = FileResponse(
        default_storage.open(name, "rb"), as_attachment=True, filename=filename, content_type="text/csv; charset=utf-8"
    )
    response["Cache-Control"] = "private, no-store"
    return response
