"""The notifier: a stream worker of its own that hands anomaly events on to Alertmanager and webhooks.

It reads the anomalies topic in its own consumer group (``otp-notifier``), so a slow or broken
receiver never holds back the detector. ``alerts`` maps an event to an Alertmanager alert (pure);
``receivers`` speaks HTTP to one receiver; ``lanes`` delivers to one receiver with retries, at
its own pace; ``notifier`` is the Kafka shell (consume, rebuild the open anomalies, commit what
every receiver accepted); ``settings`` is its ``[notify]`` configuration.
"""
