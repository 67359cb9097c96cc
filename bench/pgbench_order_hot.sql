-- The hot-product variant of pgbench_order.sql: every order is 1 line of the same product
-- (-D p1=<hot product id> -D sku1=.. -D price1=..), so every transaction queues on one row lock.
BEGIN;
SELECT id, sku, name, description, price, stock, is_active, created_at, updated_at
  FROM catalog_product WHERE id IN (':p1') ORDER BY id FOR UPDATE;
UPDATE catalog_product
   SET stock = CASE WHEN id = ':p1' THEN stock - 1 ELSE stock END,
       updated_at = statement_timestamp()
 WHERE id IN (':p1');
INSERT INTO orders_idempotencyrecord
    (id, client_id, key, fingerprint, status, claim_token, locked_until,
     response_headers, created_at, expires_at)
VALUES (gen_random_uuid(), ':client_id', gen_random_uuid()::text,
        md5(random()::text) || md5(random()::text), 'in_progress', gen_random_uuid(),
        now() + interval '30 seconds', '{}'::jsonb, now(), now() + interval '24 hours')
ON CONFLICT (client_id, key) DO NOTHING
RETURNING id AS record_id, claim_token \gset
INSERT INTO orders_order
    (id, client_id, email, status, cancel_reason, total, currency, created_at, updated_at,
     paid_at, cancelled_at, expires_at, event_version)
VALUES (gen_random_uuid(), ':client_id', 'pgb-' || gen_random_uuid() || '@example.com',
        'pending_payment', '', :price1, 'USD', now(), now(), NULL, NULL,
        now() + interval '15 minutes', 1)
RETURNING id AS order_id, email \gset
INSERT INTO orders_orderitem
    (id, order_id, product_id, sku, name, unit_price, quantity, line_total)
VALUES (gen_random_uuid(), ':order_id', ':p1', ':sku1', 'Bench product', :price1, 1, :price1);
INSERT INTO outbox_outboxevent
    (id, type, aggregate_type, aggregate_id, version, occurred_at, correlation_id, payload,
     status, attempts, next_attempt_at, lease_token, lease_expires_at, last_error,
     published_at, created_at)
VALUES (gen_random_uuid(), 'order.created', 'order', ':order_id', 1, now(),
        md5(random()::text),
        jsonb_build_object(
          'order_id', ':order_id', 'client_id', ':client_id', 'email', ':email',
          'status', 'pending_payment', 'total', ':price1', 'currency', 'USD',
          'expires_at', now() + interval '15 minutes',
          'items', jsonb_build_array(
            jsonb_build_object('product_id', ':p1', 'sku', ':sku1', 'quantity', 1,
                               'unit_price', ':price1', 'line_total', ':price1'))),
        'pending', 0, now(), NULL, NULL, '', NULL, now());
UPDATE orders_idempotencyrecord
   SET status = 'completed', response_status = 201,
       response_body = convert_to(rpad('{"id":":order_id"', 450, ' '), 'UTF8'),
       response_headers = jsonb_build_object('Content-Type', 'application/json',
                                             'Location', '/api/v1/orders/:order_id/'),
       order_id = ':order_id', locked_until = now()
 WHERE id = ':record_id' AND claim_token = ':claim_token' AND status = 'in_progress';
COMMIT;
