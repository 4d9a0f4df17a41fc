"""Staff pages for campaign CSV uploads: upload, confirm the column mapping, follow the batch, download."""
import os

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from templates_sync.models import PassTemplate

from . import selectors, services
from .forms import MappingForm, UploadForm
from .models import LinkBatch

VIEW = "links.view_linkbatch"
UPLOAD = "links.upload_links"
HISTORY_PAGE_SIZE = 50


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_list(request):
    page = Paginator(selectors.link_batch_list(), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "links/batch_list.html", {"page": page})


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
                template=template, uploaded_by=request.user, file=form.cleaned_data["file"],
                delimiter=form.cleaned_data["delimiter"] or None,
            )  # fmt: skip
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
            services.link_batch_confirm(batch=batch, mapping=form.cleaned_data["mapping"])
        except services.LinkUploadError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("links:batch_detail", batch.pk)
    if batch.status != LinkBatch.Status.UPLOADED:
        return redirect("links:batch_detail", batch.pk)  # confirmed twice (a double click): show the batch
    return _detail(request, batch, form, status=400)


def _detail(request, batch: LinkBatch, form: MappingForm | None, status: int = 200):
    preview = selectors.link_batch_preview(batch=batch) if form is not None else None
    mapping_rows = []
    if form is not None:
        # Each column beside its first few values: what a person looks at to tell an email from a name.
        samples = [cells for _, cells in preview.rows[:3]]
        mapping_rows = [(column, field, [row[index] for row in samples if index < len(row)])
                        for index, (column, field) in enumerate(form.columns())]  # fmt: skip
    context = {
        "batch": batch,
        "form": form,
        "preview": preview,
        "mapping_rows": mapping_rows,
        "can_rerun": services.link_batch_can_rerun(batch=batch),
    }
    return render(request, "links/batch_detail.html", context, status=status)


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
    """Files are served through here, never from a media URL: the permission check is the point."""
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    if kind not in DOWNLOADS:
        raise Http404
    attribute, suffix = DOWNLOADS[kind]
    name = getattr(batch, attribute).name
    if not name or not default_storage.exists(name):
        raise Http404("This file is not ready.")
    stem = os.path.splitext(batch.original_name)[0] or "upload"
    filename = f"{stem}-{suffix}.csv" if suffix else batch.original_name
    response = FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename,
                            content_type="text/csv; charset=utf-8")  # fmt: skip
    response["Cache-Control"] = "private, no-store"
    return response
