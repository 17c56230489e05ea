"""What ``check`` can tell of the principal's Kafka permissions without writing anything.

Each cluster is asked for the configs of the topics the relay uses there (DescribeConfigs, which the
relay needs: a created target topic takes its source's configs, and the positions topic's are checked
at start-up); a denial is a problem naming the cluster, the topic and the ACL of docs/operations.md.
Where the principal may describe ACLs (Describe on the Cluster, which a relay does not need), the
ACLs naming its SASL user are listed. The transactional id is not tried: initialising it would fence
a running relay with the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)

from kafka_lfs_relay.admin import Admins, error_text
from relay.settings import ClusterConfig

_DENIED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)
_LISTED = 20
"""ACL bindings a line names before it only counts the rest."""


def _denied(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and exc.args[0].code() in _DENIED


def check_describe_configs(
    admins: Admins, cluster: ClusterConfig, side: str, topics: Sequence[str], out: Callable[[str], None], timeout: float
) -> int:
    """DescribeConfigs on each of ``topics`` on ``cluster`` (``side``: source or target); the denials."""
    if not topics:
        return 0
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    try:
        futures = admins(cluster).describe_configs(resources, request_timeout=timeout)
    except KafkaException as exc:
        out(f"warn    {side} {cluster.name}: topic configs could not be asked for: {error_text(exc)}")
        return 0
    problems = 0
    for resource, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
        except Exception as exc:  # a finding like any other: the check goes on
            if _denied(exc):
                out(
                    f"PROBLEM {side} {cluster.name}: topic {resource.name!r}: DescribeConfigs is denied "
                    f"({error_text(exc)}); grant DescribeConfigs on Topic {resource.name!r} (docs/operations.md)"
                )
                problems += 1
            # a missing topic or a passing error is reported by the checks of topics
    return problems


def list_acls(admins: Admins, cluster: ClusterConfig, side: str, out: Callable[[str], None], timeout: float) -> None:
    """The ACLs naming the SASL user of ``cluster``'s config, if the principal may describe ACLs."""
    user = cluster.kafka.get("sasl.username")
    if not user:
        return
    principal = f"User:{user}"
    # None matches any resource name and any host (the stubs only allow a string).
    wanted = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,  # type: ignore[arg-type]
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    try:
        bindings = admins(cluster).describe_acls(wanted, request_timeout=timeout).result(timeout=timeout + 5)
    except Exception as exc:  # most principals may not describe ACLs, and need not
        if _denied(exc):
            out(f"skip    {side} {cluster.name}: the ACLs of {principal} are not listed (it may not describe ACLs)")
        else:
            out(f"skip    {side} {cluster.name}: the ACLs of {principal} are not listed: {error_text(exc)}")
        return
    shown = "; ".join(
        f"{b.permission_type.name} {b.operation.name} on {b.restype.name} {b.name!r} ({b.resource_pattern_type.name})"
        for b in bindings[:_LISTED]
    )
    more = f" and {len(bindings) - _LISTED} more" if len(bindings) > _LISTED else ""
    out(f"ok      {side} {cluster.name}: {principal} holds {len(bindings)} ACL(s): {shown or 'none'}{more}")


__all__ = ["check_describe_configs", "list_acls"]
