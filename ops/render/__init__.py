"""Turning read-model records and events into what a person reads: kubectl-like tables, YAML,
JSON, ages ("5m", "3d"), describe pages, and refusals (one line per problem).

The command line uses it as ``render.<name>``; each concern is a module of its own: ``text``
(tables, ages, YAML/JSON, errors), ``pods`` (kubectl's pod columns), ``objects`` (every kind's
``get`` table), ``services`` (services, slices, endpoints), ``top``, ``events`` and
``describe``. Everything here is light: the command line imports it at start-up.
"""

from ops.render.describe import (
    EVENT_COLUMNS,
    EVENT_RULES,
    deployment_lines,
    describe,
    event_lines,
    scheduling_lines,
    service_lines,
)
from ops.render.events import (
    EVENT_HEADERS,
    HISTORY_HEADERS,
    RowPrinter,
    event_dict,
    event_row,
    event_row_printer,
    history_rows,
    object_name,
    resource_name,
)
from ops.render.objects import (
    COLUMNS,
    DEFAULT_COLUMNS,
    node_roles,
    node_status,
    object_table,
    selector_text,
)
from ops.render.pods import pod_columns
from ops.render.services import (
    endpoint_slice_items,
    endpoints_items,
    ready_endpoints_text,
    service_discovery,
    service_external_ip,
)
from ops.render.text import (
    age,
    error_lines,
    error_text,
    full_manifest,
    human_duration,
    iso,
    table,
    to_json,
    to_yaml,
)
from ops.render.top import (
    TOP_NODE_HEADERS,
    TOP_POD_HEADERS,
    cores,
    mebibytes,
    top_nodes_table,
    top_pods_table,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_HEADERS",
    "EVENT_RULES",
    "HISTORY_HEADERS",
    "TOP_NODE_HEADERS",
    "TOP_POD_HEADERS",
    "RowPrinter",
    "age",
    "cores",
    "deployment_lines",
    "describe",
    "endpoint_slice_items",
    "endpoints_items",
    "error_lines",
    "error_text",
    "event_dict",
    "event_lines",
    "event_row",
    "event_row_printer",
    "full_manifest",
    "history_rows",
    "human_duration",
    "iso",
    "mebibytes",
    "node_roles",
    "node_status",
    "object_name",
    "object_table",
    "pod_columns",
    "ready_endpoints_text",
    "resource_name",
    "scheduling_lines",
    "selector_text",
    "service_discovery",
    "service_external_ip",
    "service_lines",
    "table",
    "to_json",
    "to_yaml",
    "top_nodes_table",
    "top_pods_table",
]
