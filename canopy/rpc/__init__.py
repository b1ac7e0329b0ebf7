"""The bus: the transport interface, its implementations (local, zmq, nats, amqp) and the typed messages."""
