-- run once by the postgres image at first start: alloop's database next to Label Studio's
CREATE DATABASE alloop OWNER alloop;
