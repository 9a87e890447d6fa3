"""Checks the interface-endpoint gate of patches/vpce.py by hand, with boto3.

Usage: python check_vpce.py   (the venv's python: `$(tools/venv.sh) tests/emulator/check_vpce.py`)

Starts its own emulator on a free port, builds a worker account and a
repository account joined by peering, and walks a worker's requests through
the gate: allowed, refused for each missing piece of the path (with the exact
message), and the log of who called what. Exits non-zero when a check
fails (VERBOSE=1 shows the emulator's request log).
"""

import json
import os
import subprocess
import sys
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "us-east-1"
WORKER_ACCOUNT = "111111111111"
REPO_ACCOUNT = "222222222222"


def start_emulator():
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "moto_server.py"), "--port", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=None if os.environ.get("VERBOSE") else subprocess.DEVNULL)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


class Check:
    def __init__(self, url):
        self.url = url
        self.failures = 0

    def session(self, account):
        sts = boto3.client("sts", endpoint_url=self.url, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/check", RoleSessionName="check")["Credentials"]
        return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                             aws_session_token=creds["SessionToken"], region_name=REGION)

    def through(self, session, service, vpce, worker=None):
        """A client of `service` whose every request goes to the endpoint's address."""
        extra = f"app/skiff-agent-{worker}" if worker else None
        config = Config(s3={"addressing_style": "path"}, user_agent_extra=extra, retries={"max_attempts": 1})
        return session.client(service, endpoint_url=f"{self.url}/skiff/vpce/{vpce}", config=config)

    def ok(self, what, call):
        try:
            call()
            print(f"ok    {what}")
        except ClientError as e:
            self.failures += 1
            print(f"FAIL  {what}: refused: {e}")

    def refused(self, what, call, *expect):
        try:
            call()
        except ClientError as e:
            code, message = e.response["Error"].get("Code"), e.response["Error"].get("Message", "")
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            missing = [x for x in expect if x not in message]
            if code == "SkiffEndpointUnreachable" and status == 403 and not missing:
                print(f"ok    {what}: {message}")
                return
            self.failures += 1
            print(f"FAIL  {what}: {status} {code} {message!r}, expected to contain {missing}")
            return
        self.failures += 1
        print(f"FAIL  {what}: allowed, expected a refusal")

    def equal(self, what, got, want):
        if got == want:
            print(f"ok    {what}")
        else:
            self.failures += 1
            print(f"FAIL  {what}: got {got!r}, want {want!r}")

    def log(self, method="GET"):
        request = urllib.request.Request(f"{self.url}/skiff/vpce", method=method)
        with urllib.request.urlopen(request) as response:
            return json.load(response)["calls"]


def network(ec2, cidr, subnet_cidrs):
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=c)["Subnet"]["SubnetId"] for c in subnet_cidrs]
    return vpc, subnets


def group(ec2, vpc, name, ingress=(), egress=None):
    """A security group with TCP 443 in from `ingress` (CIDRs or group ids) and, when
    `egress` is given, only TCP 443 out to those CIDRs."""
    sg = ec2.create_security_group(VpcId=vpc, GroupName=name, Description=name)["GroupId"]
    for source in ingress:
        perm = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
        perm.update({"UserIdGroupPairs": [{"GroupId": source}]} if source.startswith("sg-") else {"IpRanges": [{"CidrIp": source}]})
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[perm])
    if egress is not None:
        ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        for cidr in egress:
            ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 400, "ToPort": 500, "IpRanges": [{"CidrIp": cidr}]}])
    return sg


def interface(ec2, vpc, service, subnets, groups):
    return ec2.create_vpc_endpoint(VpcId=vpc, VpcEndpointType="Interface", ServiceName=f"com.amazonaws.{REGION}.{service}",
                                   SubnetIds=subnets, SecurityGroupIds=groups)["VpcEndpoint"]["VpcEndpointId"]


def worker(ec2, subnet, groups, worker_id):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=groups,
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "skiff:worker", "Value": worker_id}]}]
                             )["Instances"][0]["InstanceId"]


def main_table(ec2, vpc):
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    return next(t["RouteTableId"] for t in tables if any(a.get("Main") for a in t["Associations"]))


def run(c):
    wa, ra = c.session(WORKER_ACCOUNT), c.session(REPO_ACCOUNT)
    wec2, rec2 = wa.client("ec2"), ra.client("ec2")

    # Worker account: workers in 10.0.1.0/24, endpoints in 10.0.2.0/24.
    wvpc, (wsub, esub, wsub3) = network(wec2, "10.0.0.0/16", ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"])
    wsg = group(wec2, wvpc, "skiff-workers", egress=["10.0.0.0/16", "10.1.0.0/16"])
    closed = group(wec2, wvpc, "no-egress", egress=[])
    esg = group(wec2, wvpc, "endpoints", ingress=["10.0.1.0/24", wsg])
    sqs_vpce = interface(wec2, wvpc, "sqs", [esub], [esg])
    gw = wec2.create_vpc_endpoint(VpcId=wvpc, VpcEndpointType="Gateway", ServiceName=f"com.amazonaws.{REGION}.s3",
                                  RouteTableIds=[main_table(wec2, wvpc)])["VpcEndpoint"]["VpcEndpointId"]
    worker(wec2, wsub, [wsg], "w1")
    worker(wec2, wsub, [closed], "w2")
    worker(wec2, wsub3, [wsg], "w3")  # admitted by its group, not by its CIDR
    gone = worker(wec2, wsub3, [closed], "w4")
    wec2.terminate_instances(InstanceIds=[gone])

    # Repository account: the S3 endpoint in 10.1.1.0/24, admitting nothing yet.
    rvpc, (rsub,) = network(rec2, "10.1.0.0/16", ["10.1.1.0/24"])
    rsg = group(rec2, rvpc, "repo-s3")
    s3_vpce = interface(rec2, rvpc, "s3", [rsub], [rsg])
    ra.client("s3").create_bucket(Bucket="repo")

    c.equal("the log starts empty", c.log("DELETE"), [])

    sqs = c.through(wa, "sqs", sqs_vpce, "w1")
    c.ok("w1 creates a queue through its VPC's sqs endpoint", lambda: sqs.create_queue(QueueName="tasks"))
    c.ok("w3 is admitted by its security group", lambda: c.through(wa, "sqs", sqs_vpce, "w3").list_queues())
    c.refused("w2's group allows no 443 out", lambda: c.through(wa, "sqs", sqs_vpce, "w2").list_queues(),
              f"the worker's groups ({closed}) allow no TCP 443 out to {esub} (10.0.2.0/24) of {sqs_vpce}")
    c.ok("a terminated worker's name is no worker: only the endpoint is checked",
         lambda: c.through(wa, "sqs", sqs_vpce, "w4").list_queues())
    w2 = wec2.describe_instances(Filters=[{"Name": "tag:skiff:worker", "Values": ["w2"]}])["Reservations"][0]["Instances"][0]["InstanceId"]
    wec2.terminate_instances(InstanceIds=[w2])
    c.ok("w2, once terminated, is no worker either", lambda: c.through(wa, "sqs", sqs_vpce, "w2").list_queues())
    bare = wec2.create_vpc_endpoint(VpcId=wvpc, VpcEndpointType="Interface", ServiceName=f"com.amazonaws.{REGION}.ssm",
                                    SubnetIds=[esub])["VpcEndpoint"]["VpcEndpointId"]
    default = wec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [wvpc]},
                                                     {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]["GroupId"]
    c.refused("an endpoint with no groups has the VPC's default group", lambda: c.through(wa, "ssm", bare, "w1").describe_parameters(),
              f"{default} of {bare} admits no TCP 443 from {wsub}")
    c.ok("a gateway endpoint carries a worker whose subnet is on its route",
         lambda: c.through(wa, "s3", gw, "w1").list_buckets())
    c.refused("an unknown endpoint", lambda: c.through(wa, "s3", "vpce-0123456789abcdef0", "w1").list_buckets(),
              "vpce-0123456789abcdef0 does not exist")

    s3 = c.through(ra, "s3", s3_vpce, "w1")
    operator = c.through(ra, "s3", s3_vpce)
    c.ok("the operator (no worker) reaches the repository's S3 endpoint",
         lambda: operator.put_object(Bucket="repo", Key="a/b", Body=b"data"))
    c.refused("w1 before peering: the endpoint's group admits nothing", lambda: s3.get_object(Bucket="repo", Key="a/b"),
              f"{rsg} of {s3_vpce} admits no TCP 443 from {wsub} (10.0.1.0/24)")
    rec2.authorize_security_group_ingress(GroupId=rsg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}])
    c.refused("w1 with no peering", lambda: s3.get_object(Bucket="repo", Key="a/b"),
              f"no active VPC peering joins {wvpc}", f"and {rvpc} ({s3_vpce}")
    pcx = wec2.create_vpc_peering_connection(VpcId=wvpc, PeerVpcId=rvpc, PeerOwnerId=REPO_ACCOUNT)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
    c.refused("w1 with the peering not accepted", lambda: s3.get_object(Bucket="repo", Key="a/b"), "no active VPC peering")
    rec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx)
    wrt, rrt = main_table(wec2, wvpc), main_table(rec2, rvpc)
    c.refused("w1 with no route to the repository VPC", lambda: s3.get_object(Bucket="repo", Key="a/b"),
              f"route table {wrt} of {wsub} has no route to {rsub} (10.1.1.0/24) of {s3_vpce} through {pcx}")
    wec2.create_route(RouteTableId=wrt, DestinationCidrBlock="10.1.0.0/16", VpcPeeringConnectionId=pcx)
    c.refused("w1 with no route back", lambda: s3.get_object(Bucket="repo", Key="a/b"),
              f"no route back: route table {rrt} of {rsub} ({s3_vpce}) has no route to {wsub} (10.0.1.0/24)")
    rec2.create_route(RouteTableId=rrt, DestinationCidrBlock="10.0.0.0/16", VpcPeeringConnectionId=pcx)
    got = {}
    c.ok("w1 reads the repository through its S3 endpoint over the peering",
         lambda: got.update(body=s3.get_object(Bucket="repo", Key="a/b")["Body"].read()))
    c.equal("the object read through the gate", got.get("body"), b"data")
    c.ok("w1 writes and lists through the endpoint (path-style, query kept)",
         lambda: (s3.put_object(Bucket="repo", Key="x/y z", Body=b"1"), s3.list_objects_v2(Bucket="repo", Prefix="x/")))
    listed = s3.list_objects_v2(Bucket="repo", Prefix="x/")
    c.equal("the listing honours its query string", [o["Key"] for o in listed.get("Contents", [])], ["x/y z"])

    # A presigned GET (the user data's fetch of the agent): service from X-Amz-Credential.
    presigner = ra.client("s3", endpoint_url=f"{c.url}/skiff/vpce/{s3_vpce}",
                          config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": "repo", "Key": "a/b"}, ExpiresIn=60)
    request = urllib.request.Request(url, headers={"User-Agent": "curl/8 app/skiff-agent-w1"})
    with urllib.request.urlopen(request) as response:
        c.equal("a presigned URL through the gate", response.read(), b"data")

    # A more specific route elsewhere wins over the peering.
    wec2.create_route(RouteTableId=wrt, DestinationCidrBlock="10.1.1.0/24", GatewayId=wec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"])
    c.refused("w1 when a more specific route bypasses the peering", lambda: s3.get_object(Bucket="repo", Key="a/b"),
              f"route table {wrt} of {wsub} sends {rsub} (10.1.1.0/24) of {s3_vpce} through igw-")
    wec2.delete_route(RouteTableId=wrt, DestinationCidrBlock="10.1.1.0/24")

    # Deleted endpoints.
    wec2.delete_vpc_endpoints(VpcEndpointIds=[sqs_vpce])
    state = wec2.describe_vpc_endpoints(VpcEndpointIds=[sqs_vpce])["VpcEndpoints"][0]["State"]
    print(f"info  moto keeps a deleted endpoint with state {state!r}")
    c.refused("w1 through a deleted sqs endpoint", lambda: sqs.list_queues(), f"{sqs_vpce} does not exist")
    c.refused("the operator through a deleted endpoint", lambda: c.through(wa, "sqs", sqs_vpce).list_queues(), f"{sqs_vpce} does not exist")
    rec2.delete_vpc_endpoints(VpcEndpointIds=[s3_vpce])
    c.refused("w1 through the deleted S3 endpoint", lambda: s3.get_object(Bucket="repo", Key="a/b"), f"{s3_vpce} does not exist")
    for what, client in [("sts (query protocol)", c.through(wa, "sts", s3_vpce, "w1").get_caller_identity),
                         ("ec2", lambda: c.through(wa, "ec2", s3_vpce, "w1").describe_vpcs())]:
        c.refused(f"the refusal reads as an error in {what}", client, f"{s3_vpce} does not exist")

    # A worker's request that does not come through the gate is logged with endpoint null.
    direct = wa.client("s3", endpoint_url=c.url, config=Config(user_agent_extra="app/skiff-agent-w1"))
    direct.list_buckets()

    calls = {(x["worker"], x["endpoint"], x["service"], x["allowed"]): x["count"] for x in c.log()}
    c.equal("log: w1's sqs calls through its endpoint", calls.get(("w1", sqs_vpce, "sqs", True)), 1)
    c.equal("log: w1's refused sqs call", calls.get(("w1", sqs_vpce, "sqs", False)), 1)
    c.equal("log: w2 refused", calls.get(("w2", sqs_vpce, "sqs", False)), 1)
    c.equal("log: w1's allowed S3 calls (get, put, list x2, presigned)", calls.get(("w1", s3_vpce, "s3", True)), 5)
    c.equal("log: w1's refused S3 calls", calls.get(("w1", s3_vpce, "s3", False)), 7)
    c.equal("log: w1's call around the gate", calls.get(("w1", None, "s3", True)), 1)
    c.equal("log: the operator's calls are not counted", [k for k in calls if k[0] is None], [])
    c.equal("DELETE clears the log", c.log("DELETE"), [])
    c.equal("and GET shows it empty", c.log(), [])


def main():
    proc, url = start_emulator()
    os.environ["AWS_ENDPOINT_URL"] = url  # clients not given an endpoint's address talk to the emulator itself
    try:
        c = Check(url)
        run(c)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    if c.failures:
        print(f"{c.failures} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
