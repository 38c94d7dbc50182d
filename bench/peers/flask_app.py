"""The checkout DAG as the seed document writes an aggregator: Flask + requests.

order -> (payment, inventory, shipping) -> confirm, two ways, exactly in the seed's style
(module-level `requests` calls, a `ThreadPoolExecutor` made per request):

  POST /checkout             sequential: each call after the previous one
  POST /checkout-threadpool  payment, inventory and shipping in a ThreadPoolExecutor

The upstreams come from the environment (set by `manifold bench`, which starts this app under
gunicorn with 4 sync workers):

  ORDER_URL, PAYMENT_URL, INVENTORY_URL, SHIPPING_URL   e.g. http://127.0.0.1:7001

Run by hand:
  ORDER_URL=... PAYMENT_URL=... INVENTORY_URL=... SHIPPING_URL=... \
    bench/peers/.venv/bin/gunicorn -w 4 -b 127.0.0.1:5000 --chdir bench/peers flask_app:app
"""

import concurrent.futures
import os

import requests
from flask import Flask, jsonify, request

app = Flask(__name__)

ORDER_URL = os.environ.get("ORDER_URL", "http://127.0.0.1:7001")
PAYMENT_URL = os.environ.get("PAYMENT_URL", "http://127.0.0.1:7002")
INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://127.0.0.1:7003")
SHIPPING_URL = os.environ.get("SHIPPING_URL", "http://127.0.0.1:7004")
TIMEOUT = float(os.environ.get("UPSTREAM_TIMEOUT_S", "5"))


def post(url, body):
    response = requests.post(url, json=body, timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def create_order(body):
    return post(ORDER_URL + "/orders", body)


def pay(order_id, body):
    return post(PAYMENT_URL + "/payments", {"order_id": order_id, "amount": body.get("total")})


def reserve(order_id, body):
    return post(
        INVENTORY_URL + "/inventory/reserve", {"order_id": order_id, "items": body.get("items")}
    )


def label(order_id, body):
    return post(
        SHIPPING_URL + "/shipping/labels", {"order_id": order_id, "address": body.get("address")}
    )


def confirm(order_id):
    return post(ORDER_URL + "/orders/{}/confirm".format(order_id), None)


def answer(confirmed, payment, shipping):
    return jsonify({"order": confirmed, "payment": payment.get("status"), "shipping": shipping}), 201


@app.route("/checkout", methods=["POST"])
def checkout_sequential():
    body = request.get_json(silent=True) or {}
    order = create_order(body)
    payment = pay(order["id"], body)
    reserve(order["id"], body)
    shipping = label(order["id"], body)
    return answer(confirm(order["id"]), payment, shipping)


@app.route("/checkout-threadpool", methods=["POST"])
def checkout_threadpool():
    body = request.get_json(silent=True) or {}
    order = create_order(body)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as executor:
        payment_future = executor.submit(pay, order["id"], body)
        inventory_future = executor.submit(reserve, order["id"], body)
        shipping_future = executor.submit(label, order["id"], body)
        payment = payment_future.result()
        inventory_future.result()
        shipping = shipping_future.result()
    return answer(confirm(order["id"]), payment, shipping)


@app.route("/healthz")
def healthz():
    return "ok\n"
