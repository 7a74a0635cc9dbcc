"""The web console: static files (``assets/``: HTML, CSS and JavaScript modules, no build
step, nothing fetched from elsewhere) that call the HTTPS API from the browser with a
principal's token, and the aggregates the API answers them with (``fleet``, ``failures``)."""
