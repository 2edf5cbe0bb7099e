"""Configuration from the environment: one prefix, ``SCALEKIT_``.

``from_env()`` reads, through pydantic-settings (the ``settings`` extra, imported
only when called; a ``.env`` file in the working directory is read too):

=======================================  ==============================================
variable                                 meaning
=======================================  ==============================================
``SCALEKIT_REDIS_URL``                   the backend of limiters, concurrency limiters,
                                         shared breakers and budgets built without one
``SCALEKIT_DATABASE_URL``                the database of :meth:`Settings.pool_settings`
                                         (``from_env(database_url_var="DATABASE_URL")``
                                         reads another variable instead)
``SCALEKIT_LIMITER__<NAME>__POLICY``     per-name overrides of :meth:`Settings.rate_limiter`:
``…__ALGORITHM``, ``…__BACKEND``,        ``SCALEKIT_LIMITER__CHAT__POLICY="60/hour"``
``…__ON_BACKEND_ERROR``, ``…__PREFIX``
``SCALEKIT_REDIS_*``, ``SCALEKIT_POSTGRES_*``  pool options (:meth:`PoolSettings.from_env
                                         <scalekit.pools.PoolSettings.from_env>`)
``SCALEKIT_CURSOR_SECRET``               the pagination / sync cursor secret
=======================================  ==============================================

Any other ``SCALEKIT_*`` variable is reported once, by name, with a
:class:`UnknownSettingWarning` (``strict=True``: a
:class:`~scalekit.errors.ConfigurationError`) -- a misspelt ``SCALEKIT_REDIS_ULR``
must not leave a limiter without its Redis. Values are never logged; URLs appear
in messages and reprs with their password replaced by ``***``.
"""

from scalekit.config._env import (
    LimiterOverrides,
    Settings,
    UnknownSettingWarning,
    default_backend_url,
    from_env,
)

__all__ = [
    "LimiterOverrides",
    "Settings",
    "UnknownSettingWarning",
    "default_backend_url",
    "from_env",
]
