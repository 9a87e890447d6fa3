"""Seeds the local emulator for the demo (tools/demo): the estate a backup
protects, built the way it would exist on AWS.

  seed REGION...        repository password in SSM, and in each region an
                        instance tagged backup=daily whose data volume comes
                        from a snapshot seeded through the EBS direct APIs
  write VOLUME REGION N a guest writes N blocks on the volume (the emulator's
                        /skiff/volumes endpoint stands in for the guest)
  same VOL_A REG_A VOL_B REG_B
                        exits 0 when the two volumes hold the same bytes
  account ACCOUNT_ID REGION...
                        in another account (through its role `skiff`): the
                        repository password in SSM in each region
  bucket ACCOUNT_ID REGION NAME
                        an S3 bucket in that account and region
  subnet ACCOUNT_ID REGION NAME
                        the id of the subnet tagged Name=NAME
  endpoint ACCOUNT_ID REGION VPC_NAME
                        the id of the S3 interface endpoint of the VPC
                        tagged Name=VPC_NAME

Prints JSON. Uses boto3 from the emulator's virtual environment.
"""

import base64
import hashlib
import json
import os
import random
import sys
import urllib.request

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
# The emulated account whose volumes are read and written (the default one
# unless the caller acts in another, as the tests do).
ACCOUNT = os.environ.get("SKIFF_SEED_ACCOUNT", "123456789012")
BLOCK = 524288
PASSWORD_PARAM = "/skiff/repository-password"


def client(service, region, account=None):
    if account is None:
        return boto3.client(service, endpoint_url=ENDPOINT, region_name=region)
    creds = boto3.client("sts", endpoint_url=ENDPOINT, region_name=region).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/skiff", RoleSessionName="demo-seed")["Credentials"]
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=region,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def password_in(account, *regions):
    for region in regions:
        client("ssm", region, account).put_parameter(
            Name=PASSWORD_PARAM, Value="demo-repository-password", Type="SecureString", Overwrite=True)
    print(json.dumps({"account": account, "regions": list(regions)}))


def bucket(account, region, name):
    s3 = client("s3", region, account)
    conf = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **conf)
    print(json.dumps({"bucket": name, "account": account, "region": region}))


def subnet(account, region, name):
    subnets = client("ec2", region, account).describe_subnets(
        Filters=[{"Name": "tag:Name", "Values": [name]}])["Subnets"]
    print(subnets[0]["SubnetId"])


def endpoint(account, region, vpc_name):
    ec2 = client("ec2", region, account)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [vpc_name]}])["Vpcs"][0]["VpcId"]
    endpoints = ec2.describe_vpc_endpoints(Filters=[
        {"Name": "vpc-id", "Values": [vpc]},
        {"Name": "service-name", "Values": [f"com.amazonaws.{region}.s3"]}])["VpcEndpoints"]
    print([e for e in endpoints if e["State"].lower() == "available"][0]["VpcEndpointId"])


def block(rng, kind):
    if kind == "text":
        line = b"2026-11-22T03:00:00Z app[%d]: request served in %d ms\n"
        out = bytearray()
        while len(out) < BLOCK:
            out += line % (rng.randrange(1000), rng.randrange(500))
        return bytes(out[:BLOCK])
    return rng.randbytes(BLOCK)


def seeded_snapshot(region, rng):
    """A 1 GiB snapshot with text, random and repeated blocks, the rest zero."""
    ebs = client("ebs", region)
    snap = ebs.start_snapshot(VolumeSize=1, Description="demo seed")["SnapshotId"]
    digests = []
    repeated = block(rng, "random")
    for index in range(0, 200, 3):
        data = repeated if index % 9 == 0 else block(rng, "text" if index % 2 else "random")
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                               Checksum=checksum, ChecksumAlgorithm="SHA256")
        digests.append(hashlib.sha256(data).digest())
    aggregate = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(digests), Checksum=aggregate,
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    return snap


def seed(regions):
    rng = random.Random(42)
    out = []
    for region in regions:
        client("ssm", region).put_parameter(Name=PASSWORD_PARAM, Value="demo-repository-password",
                                            Type="SecureString", Overwrite=True)
        snap = seeded_snapshot(region, rng)
        ami = client("ssm", region).get_parameter(
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
        ec2 = client("ec2", region)
        inst = ec2.run_instances(
            ImageId=ami, InstanceType="m5.large", MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": snap, "VolumeSize": 1}}],
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "backup", "Value": "daily"}, {"Key": "Name", "Value": f"db-{region}"}]}],
        )["Instances"][0]
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}])["Volumes"]
        data = [v["VolumeId"] for v in volumes if v.get("SnapshotId") == snap]
        out.append({"region": region, "instance": inst["InstanceId"], "data_volume": data[0], "seed_snapshot": snap})
    print(json.dumps(out))


def volume_url(volume, region, index):
    return f"{ENDPOINT}/skiff/volumes/{volume}/blocks/{index}?account={ACCOUNT}&region={region}"


def write(volume, region, n):
    rng = random.Random(7)
    written = []
    for _ in range(int(n)):
        index = rng.randrange(0, 2048)
        req = urllib.request.Request(volume_url(volume, region, index), data=block(rng, "random"), method="PUT")
        urllib.request.urlopen(req).read()
        written.append(index)
    print(json.dumps({"volume": volume, "written": sorted(written)}))


def same(vol_a, region_a, vol_b, region_b):
    size = client("ec2", region_a).describe_volumes(VolumeIds=[vol_a])["Volumes"][0]["Size"]
    for index in range(size * (1 << 30) // BLOCK):
        a = urllib.request.urlopen(volume_url(vol_a, region_a, index)).read()
        b = urllib.request.urlopen(volume_url(vol_b, region_b, index)).read()
        if a != b:
            print(json.dumps({"same": False, "first_difference": index}))
            sys.exit(1)
    print(json.dumps({"same": True, "blocks": size * (1 << 30) // BLOCK}))


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"seed": lambda: seed(rest), "write": lambda: write(*rest), "same": lambda: same(*rest),
     "account": lambda: password_in(*rest), "bucket": lambda: bucket(*rest),
     "subnet": lambda: subnet(*rest), "endpoint": lambda: endpoint(*rest)}[cmd]()
