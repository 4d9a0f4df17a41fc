# One image for web, worker, beat and migrate (docker-compose.yml picks the command). What stays out of it
# (secrets, local data, tests, the SmartPages sandbox) is listed in .dockerignore.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# No secrets at build time: collectstatic runs none of the start-up checks (portal/checks.py).
RUN python manage.py collectstatic --no-input \
    && useradd --system --uid 1000 portal && mkdir -p /app/var/media && chown -R portal /app/var
USER portal
EXPOSE 8000
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
