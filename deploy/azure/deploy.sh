#!/usr/bin/env bash
# The agent harness on Azure Container Apps: one image, a web app, a worker app, a migration job.
#
#   deploy/azure/deploy.sh deploy                    build and push the image (az acr build), run the
#                                                    migrations (job), run preflight, create new web and
#                                                    worker revisions, wait for /health, shift traffic
#                                                    10 -> 50 -> 100 checking health between steps
#   deploy/azure/deploy.sh rollback                  100% back on the previous web revision (and its
#                                                    worker revision); the bad ones are deactivated
#   deploy/azure/deploy.sh teardown --confirm GROUP  delete both apps, the job, the environment and the
#                                                    resource group GROUP (which must be AZURE_RESOURCE_GROUP)
#
# Configuration is read from the environment (README: "Deploying to Azure Container Apps").
#
# Secrets never appear in an argument or a log line. Their values are read from this process's
# environment (NAME, or the file named by NAME_FILE) by aca.py, which writes the rendered app spec
# into a private temp dir (mode 0700, file 0600). `az containerapp create/update --yaml FILE` reads
# them from there and stores them as Container Apps secrets; the containers get them through
# secretRef. The rendered files are deleted right after use, and the temp dir when this script
# exits (also on error or Ctrl-C). `az containerapp secret set --secrets name=value` is never used:
# it would put the value in argv (visible in `ps` and /proc to every user of the machine).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${DEPLOY_PYTHON:-python3}"

: "${WEB_APP_NAME:=harness-web}"
: "${WORKER_APP_NAME:=harness-worker}"
: "${MIGRATE_JOB_NAME:=harness-migrate}"
: "${IMAGE_REPOSITORY:=agent-harness}"
: "${TRAFFIC_STEPS:=10 50 100}"
: "${HEALTH_PATHS:=/health /health/ready}"
: "${HEALTH_SCHEME:=https}"
: "${HEALTH_TIMEOUT_SECONDS:=600}"
: "${HEALTH_INTERVAL_SECONDS:=10}"
: "${HEALTH_REQUEST_TIMEOUT_SECONDS:=10}"
: "${STEP_CHECKS:=6}"
: "${STEP_INTERVAL_SECONDS:=10}"
: "${MIGRATE_TIMEOUT_SECONDS:=1800}"
: "${MIGRATE_POLL_SECONDS:=10}"
: "${PREFLIGHT_CMD:=python manage.py preflight}"

SECRETS=(SECRET_KEY DATABASE_URL DIRECT_DATABASE_URL REDIS_URL OPENAI_API_KEY E2B_API_KEY R2_ACCESS_KEY_ID R2_SECRET_ACCESS_KEY)

log() { printf 'deploy.sh: %s\n' "$*" >&2; }
die() {
  printf 'deploy.sh: error: %s\n' "$1" >&2
  exit "${2:-1}"
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Every az call is logged with its arguments: none of them carries a secret.
az_run() {
  log "az $*"
  az "$@"
}

# True when the resource exists (the query's output and "not found" errors are dropped).
az_exists() {
  log "az $*"
  az "$@" >/dev/null 2>&1
}

need() {
  local name missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "missing configuration: ${missing[*]} (environment variables; see README, Deploying to Azure Container Apps)" 2
}

need_secrets() {
  local name file missing=()
  for name in "$@"; do
    file="${name}_FILE"
    [[ -n "${!name:-}" || -n "${!file:-}" ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "missing secrets: ${missing[*]} (set NAME, or NAME_FILE=/path/to/a/file holding it)" 2
}

need_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)" 2
  done
}

WORKDIR=""
cleanup() {
  if [[ -n "$WORKDIR" && -d "$WORKDIR" ]]; then
    rm -rf -- "$WORKDIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

make_workdir() {
  umask 077
  WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/harness-deploy.XXXXXX")"
}

# render TEMPLATE: $WORKDIR/TEMPLATE, 0600, from deploy/azure/TEMPLATE and the environment.
render() {
  "$PYTHON" "$HERE/aca.py" render "$HERE/$1" "$WORKDIR/$1" || die "cannot render deploy/azure/$1 (see above)" 2
}

revisions() {
  az_run containerapp revision list -n "$1" -g "$AZURE_RESOURCE_GROUP" --all -o json
}

aca() {
  "$PYTHON" "$HERE/aca.py" "$@"
}

revision_fqdn() {
  az_run containerapp revision show -n "$1" -g "$AZURE_RESOURCE_GROUP" --revision "$2" --query properties.fqdn -o tsv
}

# healthy FQDN: every path in HEALTH_PATHS answers 2xx.
healthy() {
  local path url code
  for path in $HEALTH_PATHS; do
    url="${HEALTH_SCHEME}://$1${path}"
    code="$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time "$HEALTH_REQUEST_TIMEOUT_SECONDS" "$url" || true)"
    if [[ "$code" != 2?? ]]; then
      log "$url answered ${code:-nothing}"
      return 1
    fi
  done
}

wait_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT_SECONDS))
  until healthy "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep "$HEALTH_INTERVAL_SECONDS"
  done
  log "healthy: $1 ($HEALTH_PATHS)"
}

# soak FQDN: STEP_CHECKS checks STEP_INTERVAL_SECONDS apart, all healthy.
soak() {
  local check
  for ((check = 1; check <= STEP_CHECKS; check++)); do
    sleep "$STEP_INTERVAL_SECONDS"
    healthy "$1" || return 1
  done
}

check_steps() {
  local step previous=0
  for step in $TRAFFIC_STEPS; do
    if ! [[ "$step" =~ ^[0-9]+$ ]] || ((step <= previous || step > 100)); then
      die "TRAFFIC_STEPS must be increasing percentages ending at 100, got: $TRAFFIC_STEPS" 2
    fi
    previous=$step
  done
  ((previous == 100)) || die "TRAFFIC_STEPS must end at 100, got: $TRAFFIC_STEPS" 2
}

cmd_deploy() {
  (($# == 0)) || die "deploy takes no arguments (configuration comes from the environment)" 2
  need AZURE_RESOURCE_GROUP AZURE_LOCATION AZURE_ACR_NAME AZURE_CONTAINERAPPS_ENV AZURE_IDENTITY_ID R2_BUCKET
  [[ -n "${R2_ACCOUNT_ID:-}${S3_ENDPOINT_URL:-}" ]] || die "missing configuration: R2_ACCOUNT_ID or S3_ENDPOINT_URL" 2
  need_secrets "${SECRETS[@]}"
  need_tools az curl "$PYTHON"
  check_steps
  if [[ "${SKIP_BUILD:-}" == 1 && -z "${IMAGE_TAG:-}" ]]; then
    die "SKIP_BUILD=1 needs IMAGE_TAG: the tag of an image already in $AZURE_ACR_NAME" 2
  fi
  : "${REVISION_SUFFIX:=r$(date -u +%Y%m%d%H%M%S)}"
  : "${IMAGE_TAG:=$REVISION_SUFFIX}"
  [[ "$REVISION_SUFFIX" =~ ^[a-z][a-z0-9-]{0,38}[a-z0-9]$ && "$REVISION_SUFFIX" != *--* ]] ||
    die "REVISION_SUFFIX: lower-case letters, digits and single hyphens, starting with a letter (got $REVISION_SUFFIX)" 2
  [[ "$IMAGE_TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "IMAGE_TAG: not a valid image tag ($IMAGE_TAG)" 2

  local rg="$AZURE_RESOURCE_GROUP" env_name="$AZURE_CONTAINERAPPS_ENV" web="$WEB_APP_NAME" worker="$WORKER_APP_NAME"
  make_workdir

  local subscription
  subscription="$(az_run account show --query id -o tsv)"
  log "subscription $subscription"
  if ! az_exists group show -n "$rg"; then
    az_run group create -n "$rg" -l "$AZURE_LOCATION" -o none
  fi
  if ! az_exists containerapp env show -n "$env_name" -g "$rg"; then
    az_run containerapp env create -n "$env_name" -g "$rg" -l "$AZURE_LOCATION" -o none
  fi
  ENVIRONMENT_ID="$(az_run containerapp env show -n "$env_name" -g "$rg" --query id -o tsv)"
  local domain
  domain="$(az_run containerapp env show -n "$env_name" -g "$rg" --query properties.defaultDomain -o tsv)"

  # The values the containers (and preflight, below) see. `.DOMAIN` admits the app's FQDN and
  # each revision's (deploy.sh checks a new revision at its own FQDN); localhost is the Host
  # the platform's probes send (web.yaml).
  local public_host="${PUBLIC_HOSTNAME:-$web.$domain}"
  : "${ALLOWED_HOSTS:=$public_host,.$domain,localhost}"
  : "${CSRF_TRUSTED_ORIGINS:=https://$public_host}"
  : "${SITE_URL:=https://$public_host}"
  : "${LOG_LEVEL:=INFO}"
  : "${DATABASE_POOL_SIZE:=4}"
  : "${HARNESS_WORKER_STOP_GRACE_SECONDS:=60}"
  : "${WORKER_TERMINATION_GRACE_SECONDS:=$((${HARNESS_WORKER_STOP_GRACE_SECONDS%.*} + 30))}"
  : "${WEB_CPU:=1.0}" "${WEB_MEMORY:=2Gi}" "${WEB_MIN_REPLICAS:=1}" "${WEB_MAX_REPLICAS:=5}" "${WEB_CONCURRENT_REQUESTS:=100}"
  : "${WORKER_CPU:=2.0}" "${WORKER_MEMORY:=4Gi}" "${WORKER_MIN_REPLICAS:=1}" "${WORKER_MAX_REPLICAS:=5}"
  : "${WORKER_QUEUE_BACKLOG_PER_REPLICA:=20}"
  export ENVIRONMENT_ID ALLOWED_HOSTS CSRF_TRUSTED_ORIGINS SITE_URL LOG_LEVEL DATABASE_POOL_SIZE
  export HARNESS_WORKER_STOP_GRACE_SECONDS WORKER_TERMINATION_GRACE_SECONDS REVISION_SUFFIX MIGRATE_TIMEOUT_SECONDS
  export WEB_CPU WEB_MEMORY WEB_MIN_REPLICAS WEB_MAX_REPLICAS WEB_CONCURRENT_REQUESTS
  export WORKER_CPU WORKER_MEMORY WORKER_MIN_REPLICAS WORKER_MAX_REPLICAS WORKER_QUEUE_BACKLOG_PER_REPLICA

  # 1. The image, built by ACR from this checkout (.dockerignore keeps .env and .venv out);
  #    SKIP_BUILD=1 redeploys an image already there (a configuration or secret change).
  ACR_LOGIN_SERVER="$(az_run acr show -n "$AZURE_ACR_NAME" --query loginServer -o tsv)"
  IMAGE="$ACR_LOGIN_SERVER/$IMAGE_REPOSITORY:$IMAGE_TAG"
  export ACR_LOGIN_SERVER IMAGE
  if [[ "${SKIP_BUILD:-}" == 1 ]]; then
    az_run acr repository show -n "$AZURE_ACR_NAME" --image "$IMAGE_REPOSITORY:$IMAGE_TAG" -o none ||
      die "SKIP_BUILD=1: $IMAGE is not in the registry" 2
  else
    az_run acr build --registry "$AZURE_ACR_NAME" --image "$IMAGE_REPOSITORY:$IMAGE_TAG" --file "$REPO_ROOT/Dockerfile" "$REPO_ROOT"
  fi

  # 2. Migrations, from the new image, before any new revision runs (so they must keep working
  #    with the code still serving: add columns before using them, drop them a release later).
  render migrate-job.yaml
  if az_exists containerapp job show -n "$MIGRATE_JOB_NAME" -g "$rg"; then
    az_run containerapp job update -n "$MIGRATE_JOB_NAME" -g "$rg" --yaml "$WORKDIR/migrate-job.yaml" -o none
  else
    az_run containerapp job create -n "$MIGRATE_JOB_NAME" -g "$rg" --environment "$env_name" --yaml "$WORKDIR/migrate-job.yaml" -o none
  fi
  rm -f -- "$WORKDIR/migrate-job.yaml"
  local execution status deadline=$((SECONDS + MIGRATE_TIMEOUT_SECONDS))
  execution="$(az_run containerapp job start -n "$MIGRATE_JOB_NAME" -g "$rg" --query name -o tsv)"
  while :; do
    status="$(az_run containerapp job execution show -n "$MIGRATE_JOB_NAME" -g "$rg" --job-execution-name "$execution" --query properties.status -o tsv)"
    case "$status" in
      Succeeded) break ;;
      Failed | Stopped | Degraded)
        die "migrations $status; nothing else was changed. Logs: az containerapp job logs show -n $MIGRATE_JOB_NAME -g $rg --execution $execution --container migrate"
        ;;
    esac
    ((SECONDS < deadline)) || die "migrations still $status after ${MIGRATE_TIMEOUT_SECONDS}s (execution $execution)"
    sleep "$MIGRATE_POLL_SECONDS"
  done
  log "migrations done ($execution)"

  # 3. Preflight, here, with the values the containers get (the secrets come from this
  #    process's environment, never from argv).
  log "preflight: $PREFLIGHT_CMD"
  (cd "$REPO_ROOT" && DEBUG=false HARNESS_IGNORE_ENV_FILE=1 SECURE_PROXY_SSL_HEADER=true SANDBOX_PROVIDER=e2b \
    bash -c "$PREFLIGHT_CMD") || die "preflight failed: no new revision was created (the migrations have run)"

  # 4. New revisions. The web app's traffic stays pinned on the revision serving now.
  local worker_exists=false web_exists=false old_workers="" listing
  STABLE_WEB_REVISION=""
  if az_exists containerapp show -n "$worker" -g "$rg"; then
    worker_exists=true
    listing="$(revisions "$worker")"
    old_workers="$(aca active <<<"$listing")"
  fi
  if az_exists containerapp show -n "$web" -g "$rg"; then
    web_exists=true
    listing="$(revisions "$web")"
    STABLE_WEB_REVISION="$(aca serving <<<"$listing")"
  fi
  export STABLE_WEB_REVISION
  render worker.yaml
  if $worker_exists; then
    az_run containerapp update -n "$worker" -g "$rg" --yaml "$WORKDIR/worker.yaml" -o none
  else
    az_run containerapp create -n "$worker" -g "$rg" --environment "$env_name" --yaml "$WORKDIR/worker.yaml" -o none
  fi
  rm -f -- "$WORKDIR/worker.yaml"
  render web.yaml
  if $web_exists; then
    az_run containerapp update -n "$web" -g "$rg" --yaml "$WORKDIR/web.yaml" -o none
  else
    az_run containerapp create -n "$web" -g "$rg" --environment "$env_name" --yaml "$WORKDIR/web.yaml" -o none
  fi
  rm -f -- "$WORKDIR/web.yaml"
  NEW_WEB="$web--$REVISION_SUFFIX"
  NEW_WORKER="$worker--$REVISION_SUFFIX"

  # 5. Health of the new revision at its own FQDN, then traffic in steps.
  local fqdn step
  fqdn="$(revision_fqdn "$web" "$NEW_WEB")"
  wait_healthy "$fqdn" || abandon "$NEW_WEB did not answer $HEALTH_PATHS within ${HEALTH_TIMEOUT_SECONDS}s"
  if [[ -n "$STABLE_WEB_REVISION" ]]; then
    for step in $TRAFFIC_STEPS; do
      az_run containerapp ingress traffic set -n "$web" -g "$rg" \
        --revision-weight "$NEW_WEB=$step" "$STABLE_WEB_REVISION=$((100 - step))" -o none
      soak "$fqdn" || abandon "health check failed with $step% of the traffic on $NEW_WEB"
      log "$step% of the traffic on $NEW_WEB"
    done
  fi

  # 6. Done: the old worker revisions stop taking runs (SIGTERM: their runs get the grace);
  #    the previous web revision stays active at 0% for a fast rollback, older ones go.
  local revision older
  for revision in $old_workers; do
    [[ "$revision" == "$NEW_WORKER" ]] || az_run containerapp revision deactivate -n "$worker" -g "$rg" --revision "$revision" -o none
  done
  listing="$(revisions "$web")"
  older="$(aca active "$NEW_WEB" ${STABLE_WEB_REVISION:+"$STABLE_WEB_REVISION"} <<<"$listing")"
  for revision in $older; do
    az_run containerapp revision deactivate -n "$web" -g "$rg" --revision "$revision" -o none
  done
  log "deployed $IMAGE: $NEW_WEB serves 100%, $NEW_WORKER runs the work${STABLE_WEB_REVISION:+; rollback target: $STABLE_WEB_REVISION}"
}

# abandon REASON: put all traffic back on the stable revision, deactivate the new ones, fail.
abandon() {
  local rg="$AZURE_RESOURCE_GROUP"
  log "$1"
  if [[ -n "$STABLE_WEB_REVISION" ]]; then
    az_run containerapp ingress traffic set -n "$WEB_APP_NAME" -g "$rg" \
      --revision-weight "$STABLE_WEB_REVISION=100" "$NEW_WEB=0" -o none ||
      log "could not move the traffic back: run deploy/azure/deploy.sh rollback"
  fi
  az_run containerapp revision deactivate -n "$WEB_APP_NAME" -g "$rg" --revision "$NEW_WEB" -o none ||
    log "could not deactivate $NEW_WEB"
  if [[ -n "$STABLE_WEB_REVISION" ]]; then
    az_run containerapp revision deactivate -n "$WORKER_APP_NAME" -g "$rg" --revision "$NEW_WORKER" -o none ||
      log "could not deactivate $NEW_WORKER"
    die "deploy abandoned: 100% of the traffic is on $STABLE_WEB_REVISION; $NEW_WEB and $NEW_WORKER are deactivated"
  fi
  die "deploy failed: the first revision $NEW_WEB is not healthy (it is deactivated; look at: az containerapp logs show -n $WEB_APP_NAME -g $rg --revision $NEW_WEB)"
}

cmd_rollback() {
  (($# == 0)) || die "rollback takes no arguments (ROLLBACK_TO=REVISION picks the target)" 2
  need AZURE_RESOURCE_GROUP
  need_tools az curl "$PYTHON"
  local rg="$AZURE_RESOURCE_GROUP" web="$WEB_APP_NAME" worker="$WORKER_APP_NAME" listing bad target fqdn
  listing="$(revisions "$web")"
  bad="$(aca serving <<<"$listing")"
  [[ -n "$bad" ]] || die "no active revision of $web serves traffic: nothing to roll back from"
  target="${ROLLBACK_TO:-$(aca previous "$bad" <<<"$listing")}"
  [[ -n "$target" ]] || die "$bad is the only revision of $web: there is nothing to roll back to"
  [[ "$target" != "$bad" ]] || die "ROLLBACK_TO is the revision serving now ($bad)" 2
  aca has "$target" <<<"$listing" || die "ROLLBACK_TO=$target is not a revision of $web" 2
  log "rolling back $web from $bad to $target"

  az_run containerapp revision activate -n "$web" -g "$rg" --revision "$target" -o none
  fqdn="$(revision_fqdn "$web" "$target")"
  wait_healthy "$fqdn" || die "$target does not answer $HEALTH_PATHS: the traffic stays on $bad (it is activated, though)"
  az_run containerapp ingress traffic set -n "$web" -g "$rg" --revision-weight "$target=100" "$bad=0" -o none
  az_run containerapp revision deactivate -n "$web" -g "$rg" --revision "$bad" -o none

  # The worker revision of the same release (deploy.sh gives both apps one revision suffix).
  local worker_target="$worker--${target#"$web--"}" worker_bad="$worker--${bad#"$web--"}"
  listing="$(revisions "$worker")"
  if aca has "$worker_target" <<<"$listing"; then
    az_run containerapp revision activate -n "$worker" -g "$rg" --revision "$worker_target" -o none
    if aca has "$worker_bad" <<<"$listing"; then
      az_run containerapp revision deactivate -n "$worker" -g "$rg" --revision "$worker_bad" -o none
    fi
  else
    log "no worker revision $worker_target: the worker app is left as it is"
  fi
  log "rolled back: 100% on $target; $bad is deactivated (the database schema is not rolled back)"
}

cmd_teardown() {
  local confirm=""
  while (($#)); do
    case "$1" in
      --confirm)
        (($# >= 2)) || die "--confirm needs the resource group's name" 2
        confirm="$2"
        shift 2
        ;;
      --confirm=*)
        confirm="${1#--confirm=}"
        shift
        ;;
      *) die "teardown: unknown argument $1" 2 ;;
    esac
  done
  need AZURE_RESOURCE_GROUP AZURE_CONTAINERAPPS_ENV
  local rg="$AZURE_RESOURCE_GROUP"
  [[ "$confirm" == "$rg" ]] ||
    die "teardown deletes the resource group $rg and everything in it (the apps, the job, the environment, and a registry kept there): run it with --confirm $rg" 2
  need_tools az
  local app
  for app in "$WEB_APP_NAME" "$WORKER_APP_NAME"; do
    if az_exists containerapp show -n "$app" -g "$rg"; then
      az_run containerapp delete -n "$app" -g "$rg" --yes -o none
    fi
  done
  if az_exists containerapp job show -n "$MIGRATE_JOB_NAME" -g "$rg"; then
    az_run containerapp job delete -n "$MIGRATE_JOB_NAME" -g "$rg" --yes -o none
  fi
  if az_exists containerapp env show -n "$AZURE_CONTAINERAPPS_ENV" -g "$rg"; then
    az_run containerapp env delete -n "$AZURE_CONTAINERAPPS_ENV" -g "$rg" --yes -o none
  fi
  if az_exists group show -n "$rg"; then
    az_run group delete -n "$rg" --yes -o none
  fi
  log "torn down: $rg"
}

main() {
  local command="${1:-}"
  (($#)) && shift
  case "$command" in
    deploy) cmd_deploy "$@" ;;
    rollback) cmd_rollback "$@" ;;
    teardown) cmd_teardown "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
