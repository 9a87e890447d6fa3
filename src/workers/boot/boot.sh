#!/bin/bash
# skiff worker boot, run once by cloud-init (runcmd). Constant text: every
# value arrives as an argument or in /etc/skiff/agent.env, never spliced in.
#   $1  URL of the agent binary (a short-lived presigned S3 URL)
#   $2  its SHA-256, hex
# Installs the agent unless the one installed already has that hash, refuses
# a binary whose hash differs, learns the instance id from IMDSv2 and starts
# skiff-agent.service. On any failure the instance powers off (and, launched
# with shutdown behaviour `terminate`, goes away): a worker that cannot run
# its agent must not stay up and billing.
set -euo pipefail
root=${SKIFF_BOOT_ROOT:-}
imds=${SKIFF_IMDS:-http://169.254.169.254}
url=$1
sum=$2
bin=$root/usr/local/bin/skiff
trap 'echo "skiff boot: failed; powering off" >&2; systemctl poweroff' ERR

case $sum in
  *[!0-9a-f]* | "") echo "skiff boot: $sum is not a SHA-256" >&2; false ;;
esac
if [ ${#sum} -ne 64 ]; then echo "skiff boot: $sum is not a SHA-256" >&2; false; fi

if [ -x "$bin" ] && echo "$sum  $bin" | sha256sum --check --status; then
  echo "skiff boot: the agent installed has SHA-256 $sum"
else
  mkdir -p "$(dirname "$bin")"
  tmp=$(mktemp "$bin.download.XXXXXX")
  curl --fail --silent --show-error --retry 5 --retry-connrefused --max-time 600 -o "$tmp" "$url"
  if ! echo "$sum  $tmp" | sha256sum --check --status; then
    rm -f "$tmp"
    echo "skiff boot: the agent downloaded does not have SHA-256 $sum; it is not run" >&2
    false
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
fi

token=$(curl --fail --silent --show-error --retry 5 -X PUT \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token")
instance=$(curl --fail --silent --show-error --retry 5 \
  -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/instance-id")
case $instance in
  i-*) ;;
  *) echo "skiff boot: IMDS answered an instance id $instance" >&2; false ;;
esac
case $instance in
  *[!0-9a-z-]*) echo "skiff boot: IMDS answered an instance id $instance" >&2; false ;;
esac
echo "SKIFF_INSTANCE_ID=$instance" >> "$root/etc/skiff/agent.env"

systemctl daemon-reload
systemctl enable --now skiff-agent.service
