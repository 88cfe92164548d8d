"""The Celery app, generated from the route table: one quorum queue and one task per route."""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue

from bus import naming
from bus.messaging import tls as broker_tls
from bus.routes.model import RouteTable
from bus.settings import Settings
from bus.topology.compile import ingress_exchange, route_queue
from bus.worker import task as route_task
from bus.worker import undecodable


def celery_queues(routes: RouteTable) -> list[Queue]:
    # no_declare: the worker only consumes.  The queues, their bindings and the exchange are
    # declared before it starts (`gridbus routes apply`, or `ensure` in `gridbus worker`), and
    # its broker user (gridbus-worker) may not declare anything (bus/service_users.py).
    spec = ingress_exchange()
    exchange = Exchange(spec.name, spec.type, durable=True, arguments=spec.args, no_declare=True)
    return [Queue(route.queue_name, exchange=exchange, routing_key=naming.route_binding_key(route.id),
                  queue_arguments=route_queue(route).args, durable=True, no_declare=True)
            for route in routes]


def celery_routes(routes: RouteTable) -> dict[str, dict]:
    return {route.task_name: {"queue": route.queue_name} for route in routes}


def make_app(routes: RouteTable, settings: Settings) -> Celery:
    undecodable.install()  # a body the worker cannot read is dead-lettered, never dropped
    app = Celery("gridbus", broker=settings.broker_url, set_as_current=True)
    app.conf.update(
        task_queues=celery_queues(routes),
        task_routes=celery_routes(routes),
        task_create_missing_queues=False,
        # manual acks: a message is acked only after its outcome (delivered,
        # scheduled for retry, or dead-lettered) is confirmed by the broker
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=2,
        task_ignore_result=True,
        broker_native_delayed_delivery_queue_type="quorum",
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # no pidbox: nothing of gridbus uses Celery's remote control (inspect, ping, revoke), and
        # it would declare a celery.pidbox exchange and a queue per worker (configure permission)
        worker_enable_remote_control=False,
        task_serializer="json",
        accept_content=["json"],
        broker_heartbeat=30,
        worker_consumer="bus.worker.undecodable:DeadLetteringConsumer",
    )
    app.conf.update(broker_tls_conf(settings.broker_url))
    for route in routes:
        route_task.register(app, route)
    return app


def broker_tls_conf(broker_url: str) -> dict:
    """Celery's TLS options for an ``amqps://`` broker URL (kombu hands them to py-amqp), else none.
    ``server_hostname`` None: kombu puts the host of the URL there, so the name is checked."""
    tls = broker_tls.for_broker(broker_url)
    if tls is None:
        return {}
    return {"broker_use_ssl": broker_tls.amqp_ssl_options(tls, None), "broker_login_method": tls.login_method}


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # a publisher connection inherited across fork() would be shared by two processes
    route_task.reset_publisher()
