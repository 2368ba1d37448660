"""Who may use the appliance, decided once (docs/logins.md).

The protocol servers turn bytes into calls on this package and hold no
policy of their own: :mod:`phaserlink.trust.logins` decides how a login is
checked, how long a failure waits for its answer and when a client address
has guessed too often.
"""
