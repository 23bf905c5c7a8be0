"""The autoscalers' handlers (issue 19): the HorizontalPodAutoscaler controller."""
