-- Token signing keys. Key 0 is the server secret itself (tokens without a `kid`); key N
-- is derived from the secret and N, so no key material is stored here. No row means
-- key 0 is the only key and signs. At most one key signs ('active'); a rotation moves
-- it to 'verifying' (its tokens still accepted, until `retire_at` when set) and a
-- finished rotation to 'retired' (its tokens refused).
CREATE TABLE signing_keys (
    id          integer PRIMARY KEY CHECK (id >= 0),
    state       text NOT NULL CHECK (state IN ('active', 'verifying', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    retire_at   timestamptz,
    retired_at  timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

-- Which key signed a token (0 for tokens issued before keys rotated).
ALTER TABLE api_tokens ADD COLUMN key_id integer NOT NULL DEFAULT 0;

-- A tenant being deleted: its tokens are refused at once and its data is removed in
-- batches; the row goes last.
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;

-- Every change that can refuse a credential that was accepted (a token revoked, a
-- tenant deleted, a key retired), in order. Each server process reads the changes after
-- the last one it applied when `NOTIFY adze_auth` arrives, after reconnecting, and every
-- few seconds, so open streams of a refused token close within a second.
CREATE TABLE auth_changes (
    seq        bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL CHECK (kind IN ('token', 'tenant', 'keys')),
    tenant_id  uuid,
    token_id   uuid
);
